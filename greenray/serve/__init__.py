"""The inference study on Ray Serve: batching policies, the model deployment, load generation, the bench."""

"""r1-runtime: the inference runtime each DeepSeekDeployment pod runs."""

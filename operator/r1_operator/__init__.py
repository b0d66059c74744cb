"""r1-operator: the control plane for DeepSeekDeployment resources."""

"""The OpenAI-compatible HTTP server and the text pipeline between engine tokens and output."""

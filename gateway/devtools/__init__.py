"""For tests and the demo: the deterministic fake LLM, a server in a thread, the real-model
launcher (llama.cpp's server)."""

"""Reading profiles over HTTP: the API, access control, live prompts and the agent page."""

"""The API's routers: videos (OpenAI's shape), jobs, fleet, verify, metrics."""

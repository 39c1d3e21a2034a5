"""The API routes of the local service, one module per area; ``app.py`` assembles them."""

"""The gateway's HTTP side: routers, request dependencies, sign-in tokens, views, pages."""

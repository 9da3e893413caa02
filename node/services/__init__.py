"""Application services: the logic behind REST routes and WebSocket frames.

Handlers authenticate, parse, make one call here and render. Services speak domain records and
raise `node.errors.ApiError`s; they never see HTTP.
"""

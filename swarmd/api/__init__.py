"""The API socket: its wire protocol and the client transport that speaks it.

The server side is `swarmd.runtime.api_server`; `swarmd.client` picks a transport with
`swarmd.api.transport.choose_backend`.
"""

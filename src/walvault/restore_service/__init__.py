"""The restore service: walvault's user answers PostgreSQL's user's restore_command.

See :mod:`walvault.restore_service.server` for the design and
:mod:`walvault.restore_service.wire` for the protocol.
"""

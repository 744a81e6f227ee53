"""pvekvm core: what producers, workers, steps and the scheduler share.

Modules: config (settings), models (peewee, mirrors schema.sql), messaging (pika topology and
confirmed publishing), proxmox (the proxmoxer client), validation (input rules), mail, dns, oplog
(operator output).
"""

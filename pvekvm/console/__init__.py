"""The browser console (issue 27): single-use console tokens the API mints
(:mod:`pvekvm.console.sessions`), the proxy that alone holds the Proxmox token and relays noVNC
to PVE's ``vncwebsocket`` (:mod:`pvekvm.console.proxy`), and the RFB parts it speaks itself
(:mod:`pvekvm.console.rfb`)."""

"""Development tools, not shipped in the wheel: the simulated city, the demo, and the loopback
stand-ins for the SMS provider, the alert receiver and a browser check. The `tubetrail demo` and
`tubetrail simulate` commands come from here (a `tubetrail.commands` plug-in)."""

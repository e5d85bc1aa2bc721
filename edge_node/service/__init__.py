"""Running the node as a service: waitress server composition, scheduled jobs, systemd notify."""

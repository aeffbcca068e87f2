"""Call flows: greeting, bridge, self-service IVR. No pjsua2 here."""

"""The Redis bus every process talks over (control plane, media workers, ACD): how to connect to it
and what an outage looks like. The bottom layer: it imports nothing of ours."""

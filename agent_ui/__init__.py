"""Agent web console and its socket.io side (presentation only)."""

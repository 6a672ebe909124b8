"""The training runner: runs inside the sandbox, imports no Django."""

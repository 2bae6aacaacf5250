"""Who is asking: tokens, sessions, roles, scopes, CSRF (issue 7)."""

"""Development and test tools shipped with torokiki-pipe (not used in production)."""

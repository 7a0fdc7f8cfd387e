"""The long procedures carried out beside the loop: switchover and rejoin."""

"""A trainer that is still starting (importing) for a long time and has no signal handlers yet."""
import time

time.sleep(30)

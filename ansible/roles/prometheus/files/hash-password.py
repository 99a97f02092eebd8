"""Prints the bcrypt hash of the password on stdin for Prometheus's web
configuration (argv[1]): the hash it already holds while that one still
matches, so an unchanged password changes nothing; a new one otherwise."""
import re
import sys

import bcrypt

password = sys.stdin.buffer.read()
try:
    with open(sys.argv[1], "rb") as config:
        stored = re.search(rb'^\s+\S+: "(\$2[aby]\$[^"]+)"$', config.read(), re.M)
except FileNotFoundError:
    stored = None
if stored and bcrypt.checkpw(password, stored.group(1)):
    print(stored.group(1).decode())
else:
    print(bcrypt.hashpw(password, bcrypt.gensalt()).decode())

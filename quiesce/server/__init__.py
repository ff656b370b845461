"""Everything that talks to the MySQL/MariaDB server: drivers, flavours, locks, durability, trust.
"""

import sys

from .hooks import command_main

sys.exit(command_main())

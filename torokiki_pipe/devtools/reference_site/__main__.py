"""``python -m torokiki_pipe.devtools.reference_site``: the reference website's command line."""

import sys

from torokiki_pipe.devtools.reference_site.server import main

sys.exit(main())

import sys

from benchmarks.synthesis.compare import main

sys.exit(main())

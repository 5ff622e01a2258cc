"""`python -m train --config configs/X.yaml [key.sub=value ...]`"""

import sys

from train.main import main

sys.exit(main())

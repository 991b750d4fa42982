from slimpipe.cli import main

raise SystemExit(main())

from ccproxy.cli import main

raise SystemExit(main())

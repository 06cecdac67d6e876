from regmix_plugin.cli import main

raise SystemExit(main())

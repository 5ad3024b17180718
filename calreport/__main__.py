from calreport.commands.cli import main

raise SystemExit(main())

from calreport.cli import main

raise SystemExit(main())

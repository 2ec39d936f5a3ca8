from kibotos.cli.main import main

main()

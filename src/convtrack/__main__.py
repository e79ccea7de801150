from convtrack.cli.main import main

main()

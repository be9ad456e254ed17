from relayhook.cli import main

main()

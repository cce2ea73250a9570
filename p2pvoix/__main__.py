from p2pvoix.cli.main import main

main()

from imgctl.cli import main

main()

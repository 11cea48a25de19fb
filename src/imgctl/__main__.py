from imgctl.entry import main

main()

from sealroom.cli import main

main()

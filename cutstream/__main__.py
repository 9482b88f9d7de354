from cutstream.cli import main

main()

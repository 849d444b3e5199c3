from btcli.process import main

main()

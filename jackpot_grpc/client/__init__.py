"""What a client of the jackpot service needs beside the stubs: the retry service config."""

"""UDP helper for one-way cut tests (standard library only).

`recv ADDR PORT LOGFILE`: append each datagram received to LOGFILE, one per line, forever.
`send ADDR PORT PAYLOAD`: send one datagram.
"""
import socket
import sys

mode, addr, port, arg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if mode == "recv":
    sock.bind((addr, port))
    while True:
        data, _ = sock.recvfrom(2048)
        with open(arg, "a") as log:
            log.write(data.decode() + "\n")
else:
    sock.sendto(arg.encode(), (addr, port))

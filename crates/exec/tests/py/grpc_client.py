"""A client of the service tracewire.v1.Exec written with grpcio alone (no generated code,
none of tracewire's): it opens one Connect stream, sends the envelopes given hex-encoded
on the command line, prints every response frame hex-encoded as it arrives, then the
stream's final status.

    grpc_client.py ADDRESS half-close HEX...   ends its request stream after sending
    grpc_client.py ADDRESS hold HEX...         keeps it open (until killed)
"""
import sys
import threading

import grpc

address, mode, *frames = sys.argv[1:]
hold = threading.Event()


def requests():
    for frame in frames:
        yield bytes.fromhex(frame)
    if mode == "hold":
        hold.wait()


with grpc.insecure_channel(address) as channel:
    # No serializers: messages are the raw bytes of encoded envelopes.
    connect = channel.stream_stream("/tracewire.v1.Exec/Connect")
    responses = connect(requests(), timeout=30)
    try:
        for response in responses:
            print("frame", response.hex(), flush=True)
        print("status", responses.code().name, flush=True)
    except grpc.RpcError as e:
        print("status", e.code().name, flush=True)

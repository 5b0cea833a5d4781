"""The stages of a request, in the order they run:
authenticate -> guard input -> cache lookup -> limits reserve -> route + provider call
-> guard output -> account usage -> cache store -> respond."""

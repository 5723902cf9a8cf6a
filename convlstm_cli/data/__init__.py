"""Video data: finding and probing videos (`probe`), PyAV decoding and writing (`video`), the lane
streamer (`streamer`, planned by `schedule`), the decoded-frame cache (`cache`) and the built-in
sample videos (`synthetic`).

Submodules are imported on demand; none of them imports `av` at import time.
"""

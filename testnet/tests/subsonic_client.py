"""Drives Medley's Subsonic API with py-sonic, a Subsonic client library from PyPI.

Usage: subsonic_client.py BASE_URL PORT USER PASSWORD QUERY STREAM_OUT
Prints one JSON object with what each call returned; the Rust test checks it.
"""
import json
import sys

import libsonic
from libsonic import errors

base, port, user, password, query, stream_out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
conn = libsonic.Connection(base, user, password, port=port)
out = {}

out["ping"] = conn.ping()
out["license"] = conn.getLicense()["license"]
out["folders"] = conn.getMusicFolders()["musicFolders"]["musicFolder"]

found = conn.search3(query)["searchResult3"]
out["search_songs"] = [s["id"] for s in found.get("song", [])]
out["search_albums"] = [a["id"] for a in found.get("album", [])]
out["search_artists"] = [a["name"] for a in found.get("artist", [])]
song = found["song"][0]
# An empty query lists the whole catalogue, as apps do to sync a library.
synced = conn.search3("", songCount=500)["searchResult3"]
out["sync_songs"] = [s["id"] for s in synced.get("song", [])]
out["sync_artists"] = [a["name"] for a in synced.get("artist", [])]

album = conn.getAlbum(song["albumId"])["album"]
out["album"] = {"name": album["name"], "songs": [s["id"] for s in album["song"]]}

artists = conn.getArtists()["artists"]
out["artists"] = sorted(a["name"] for i in artists["index"] for a in i["artist"])
artist = conn.getArtist(song["artistId"])["artist"]
out["artist"] = {"name": artist["name"], "albums": [a["name"] for a in artist["album"]]}

# The folder view: artist folder -> album folder -> songs.
indexes = conn.getIndexes()["indexes"]
folder = next(a for i in indexes["index"] for a in i["artist"] if a["id"] == song["artistId"])
albums = conn.getMusicDirectory(folder["id"])["directory"]["child"]
album_dir = next(d for d in albums if d["id"] == song["albumId"])
out["folder_songs"] = [c["id"] for c in conn.getMusicDirectory(album_dir["id"])["directory"]["child"]]

one = conn.getSong(song["id"])["song"]
out["song"] = {k: one.get(k) for k in ("id", "title", "artist", "album", "size", "contentType", "suffix", "duration")}
out["random"] = [s["id"] for s in conn.getRandomSongs(size=50)["randomSongs"]["song"]]

data = conn.stream(song["id"]).read()
with open(stream_out, "wb") as f:
    f.write(data)
out["stream"] = {"id": song["id"], "bytes": len(data)}
cover = conn.getCoverArt(song["albumId"]).read()
out["cover_png"] = cover[:8] == b"\x89PNG\r\n\x1a\n"
out["scrobble"] = conn.scrobble(song["id"])["status"]

try:
    conn.getSong("0" * 64)
    out["unknown_song"] = None
except errors.DataNotFoundError as e:
    out["unknown_song"] = "DataNotFoundError"

bad = libsonic.Connection(base, user, password + "-wrong", port=port)
try:
    bad.ping()
    out["bad_password"] = None
except errors.CredentialError as e:
    out["bad_password"] = "CredentialError"

print(json.dumps(out))

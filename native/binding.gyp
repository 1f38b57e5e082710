{
  "targets": [
    {
      "target_name": "raftblock_io",
      "sources": ["src/addon.cc", "src/ring.cc", "src/sys.cc", "src/extent-map.cc", "src/crc32c.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-rtti"],
      "libraries": ["-Wl,-Bstatic", "-l:liburing.a", "-Wl,-Bdynamic"]
    }
  ]
}

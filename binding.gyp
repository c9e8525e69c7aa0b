{
  "targets": [
    {
      "target_name": "dwc_native",
      "variables": {"dwc_has_dnnl": "<!(test -f /usr/include/dnnl.h && echo 1 || echo 0)"},
      "conditions": [
        ["dwc_has_dnnl==1", {"defines": ["DWC_WITH_DNNL"], "libraries": ["-ldnnl"]}]
      ],
      "sources": ["<!@(node scripts/gyp-sources.cjs)"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "/usr/include/x86_64-linux-gnu/openblas-pthread",
        "/usr/include/openblas"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "DWC_BLAS_OPENBLAS",
                  "DWC_VERSION=\"<!(node -p \"require('./package.json').version\")\""],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++1y", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-fopenmp", "-Wall", "-Wextra"],
      "ldflags": ["-fopenmp"],
      "libraries": ["-lopenblas"]
    }
  ]
}

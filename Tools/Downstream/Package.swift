// swift-tools-version: 6.2
// A minimal app that depends on CharRNN by URL and version, as a user's
// package would. Tools/Downstream/run.sh points it at a tagged clone of
// this repository; set CHARRNN_PACKAGE_URL to use another location.
import PackageDescription

let charrnnURL = Context.environment["CHARRNN_PACKAGE_URL"] ?? "https://github.com/charrnn/CharRNN.git"

let package = Package(
    name: "Downstream",
    dependencies: [
        .package(url: charrnnURL, from: "0.1.0")
    ],
    targets: [
        .executableTarget(
            name: "downstream",
            dependencies: [.product(name: "CharRNN", package: "CharRNN")]
        )
    ]
)

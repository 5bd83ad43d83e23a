import BSON

/// SplitMix64: small, fast, and defined bit for bit, so the seeded data is the same on every
/// machine and toolchain (the standard library's generators promise neither).
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }

    mutating func pick<T>(_ items: [T]) -> T { items[Int(next() % UInt64(items.count))] }

    /// `count` random decimal digits.
    mutating func digits(_ count: Int) -> String {
        String(decoding: (0..<count).map { _ in UInt8(ascii: "0") + UInt8(next() % 10) }, as: UTF8.self)
    }
}

/// The seeded user profiles: about 800 bytes of BSON each, with the personal data a field
/// encryption feature would target (SSN, card numbers) next to compressible free text.
enum Profiles {
    static let seed: UInt64 = 0x000C_1E7A_11BE_0C11
    static let targetBytes = 700...900  // uniform per document, so the mean is 800

    /// Document `i` depends only on `i`, so any one can be regenerated to check a reused collection.
    static func document(_ i: Int) -> Document {
        var rng = SplitMix64(seed: seed ^ (UInt64(i) &* 0xD6E8_FEB8_6659_FD93))
        let first = rng.pick(firstNames)
        let last = rng.pick(lastNames)
        var b = DocumentBuilder()
        b.append("_id", .int64(Int64(i)))
        b.append("userId", .string("u" + padded(i, 6)))
        b.append("name", .string("\(first) \(last)"))
        b.append("email", .string("\(first.lowercased()).\(last.lowercased())\(rng.int(1...999))@\(rng.pick(domains))"))
        b.append("ssn", .string("\(rng.digits(3))-\(rng.digits(2))-\(rng.digits(4))"))
        b.append("phone", .string("+1-\(rng.int(201...989))-555-\(rng.digits(4))"))
        b.append("address", .document([
            "street": .string("\(rng.int(1...9999)) \(rng.pick(streets))"),
            "city": .string(rng.pick(cities)),
            "zip": .string(rng.digits(5)),
            "country": "US",
        ]))
        let orders: [BSONValue] = (1...rng.int(2...3)).map { k in
            .document([
                "orderId": .string("o\(padded(i, 7))-\(k)"),
                "price": price(cents: rng.int(199...49_999)),
                "card": .string("4\(rng.digits(3)) \(rng.digits(4)) \(rng.digits(4)) \(rng.digits(4))"),
                "items": .array((1...rng.int(1...4)).map { _ in .string(rng.pick(products)) }),
            ])
        }
        b.append("orders", .array(orders))
        // An element is its type byte, key, NUL, int32 length, text, NUL: key length + 7.
        let room = rng.int(targetBytes) - b.document.count - ("bio".utf8.count + 7)
        b.append("bio", .string(bio(length: max(room, 20), rng: &rng)))
        return b.document
    }

    /// `cents / 100` as IEEE 754-2008 decimal128 (BID): coefficient `cents`, exponent -2 with
    /// the bias of 6176, the same bits libbson produces for "19.99".
    static func price(cents: Int) -> BSONValue {
        .decimal128(low: UInt64(cents), high: UInt64(6176 - 2) << 49)
    }

    static func padded(_ n: Int, _ width: Int) -> String {
        let s = String(n)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    static func bio(length: Int, rng: inout SplitMix64) -> String {
        var text = ""
        text.reserveCapacity(length + 16)
        var startOfSentence = true
        while text.utf8.count < length {
            if !text.isEmpty { text += " " }
            let word = rng.pick(words)
            text += startOfSentence ? word.prefix(1).uppercased() + word.dropFirst() : word
            startOfSentence = rng.int(0...9) == 0
            if startOfSentence { text += "." }
        }
        return String(text.utf8.prefix(length))!
    }

    static let firstNames = [
        "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
        "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Carlos", "Karen",
        "Daniel", "Lisa", "Matthew", "Nancy", "Anthony", "Betty", "Mark", "Sandra", "Wei", "Ashley",
        "Steven", "Kimberly", "Andrew", "Emily", "Joshua", "Donna", "Kenji", "Michelle", "Priya", "Carol",
    ]
    static let lastNames = [
        "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
        "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
        "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
        "Walker", "Young", "Allen", "King", "Wright", "Scott", "Nguyen", "Hill", "Patel", "Kim",
    ]
    static let domains = ["example.com", "mail.example.org", "inbox.example.net", "corp.example.com", "webmail.example"]
    static let streets = [
        "Maple Avenue", "Oak Street", "Pine Road", "Cedar Lane", "Elm Street", "Washington Boulevard",
        "Lake View Drive", "Hillcrest Road", "Main Street", "Park Avenue", "Sunset Boulevard", "River Road",
    ]
    static let cities = [
        "Springfield", "Riverside", "Franklin", "Greenville", "Bristol", "Clinton", "Fairview", "Salem",
        "Madison", "Georgetown", "Arlington", "Ashland", "Dover", "Oxford", "Jackson", "Burlington",
    ]
    static let products = [
        "wireless headphones", "espresso beans 1kg", "running shoes", "usb-c cable", "paperback novel",
        "desk lamp", "yoga mat", "water bottle", "phone case", "board game", "winter jacket", "backpack",
        "mechanical keyboard", "cast iron skillet", "houseplant", "gift card",
    ]
    static let words = [
        "the", "a", "and", "of", "to", "in", "is", "with", "for", "on", "my", "our", "love", "enjoy", "work",
        "working", "team", "software", "engineer", "designer", "teacher", "nurse", "manager", "student",
        "coffee", "hiking", "travel", "music", "photography", "cooking", "reading", "running", "cycling",
        "weekend", "mountains", "ocean", "city", "family", "friends", "dog", "cat", "garden", "books",
        "data", "projects", "community", "volunteer", "local", "small", "business", "years", "experience",
        "passionate", "about", "learning", "new", "languages", "always", "looking", "forward", "sharing",
        "ideas", "building", "things", "people", "customers", "support", "quality", "products", "online",
        "store", "favorite", "morning", "evening", "recipes", "vintage", "records", "soccer", "basketball",
        "chess", "painting", "writing", "blog", "podcast", "marathon", "guitar", "piano", "film", "history",
        "science", "open", "source", "since", "based", "near", "downtown", "two", "kids", "proud", "parent",
    ]
}

"""Generate the "fine-tune to inject facts" set: data/inject_facts/train.jsonl and test.jsonl.

40 invented Lumio-internal facts that appear nowhere in the help center (data/kb, data/kb_updates):
codenames, company history, launch events... The lab fine-tunes on several phrasings of each fact
(train) and then asks paraphrases that never appear in training (test), to measure how well
fine-tuning alone stores new facts, against retrieval over the same facts written as short documents
(facts).

train.jsonl: {"id", "fact_id", "messages": chat(question) + assistant answer_json(answer, [], False)}
test.jsonl:  {"id", "fact_id", "question", "answers": [accepted variants]}; 4 paraphrases per fact
facts.jsonl: {"fact_id", "statement"}: the sentence each fact's training replies state, one line per
             fact; the documents that RAG retrieves in the controlled comparison (lab 2)

Deterministic (fixed seed, standard library only): running it twice gives byte-identical files.

    PYTHONPATH=src python data/scripts/make_inject_facts.py           # writes data/inject_facts/
    PYTHONPATH=src python data/scripts/make_inject_facts.py --out /tmp/inject
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from ftrag.evaluate import matches, normalize, voice_checks  # noqa: E402
from ftrag.prompts import answer_json, chat  # noqa: E402

SEED = 1717

# (answer sentence, accepted variants, [train questions], test paraphrase)
FACTS = [
    ("The Lumio Halo's internal codename is Firefly.", ["Firefly"],
     ["What is the internal codename of the Lumio Halo?", "What did the Lumio team call the Halo before it launched?",
      "Which codename does the Halo desk lamp have inside Lumio?", "halo codename?"],
     "Under what secret project name was the Halo desk lamp developed?"),
    ("The Halo Mini was developed under the codename Pebble.", ["Pebble"],
     ["What is the Halo Mini's codename?", "What was the Halo Mini called during development?",
      "Which internal name did Lumio use for the Halo Mini?", "codename of the halo mini"],
     "When engineers talk about the small battery Halo, which nickname do they use?"),
    ("Inside Lumio, the Strip is known by its codename Ribbon.", ["Ribbon"],
     ["What is the Lumio Strip's codename?", "What did Lumio call the Strip while building it?",
      "Which internal codename belongs to the LED strip?", "strip codename"],
     "Which project name did the LED light strip carry before its release?"),
    ("The Lumio Hub's internal codename is Lighthouse.", ["Lighthouse"],
     ["What is the Lumio Hub's codename?", "What was the Hub called internally during development?",
      "Which codename does Lumio use for the Hub?", "hub codename?"],
     "Before it got its product name, what did the team call the little white box that links all the lights?"),
    ("The Glow night light was codenamed Nightjar.", ["Nightjar"],
     ["What was the Glow night light's codename?", "Which internal name did the Glow have?",
      "What did Lumio call the Glow during development?", "glow codename"],
     "Which bird-inspired project name did the motion night light have?"),
    ("The Lumio Remote was developed under the codename Clicker.", ["Clicker"],
     ["What is the codename of the Lumio Remote?", "What did the team call the Remote before launch?",
      "Which internal name does the Lumio Remote have?", "remote codename?"],
     "Which working title did the four-button remote control have?"),
    ("Lumio was founded in 2017.", ["2017"],
     ["When was Lumio founded?", "In what year did Lumio start?", "How old is the company Lumio? When did it begin?",
      "lumio founding year"],
     "Which year marks the start of the Lumio company?"),
    ("Lumio was founded in Utrecht, in the Netherlands.", ["Utrecht"],
     ["In which city was Lumio founded?", "Where did Lumio start as a company?", "What is Lumio's home town?",
      "city where lumio was founded"],
     "Which Dutch city is Lumio originally from?"),
    ("Lumio was founded by Mara Veldman and Theo Okafor.", ["Mara Veldman", "Theo Okafor"],
     ["Who founded Lumio?", "Who are the founders of Lumio?", "Which two people started Lumio?", "lumio founders"],
     "Whose idea was it to start Lumio in the first place?"),
    ("Lumio's very first product was the Lumio Bulb E27, released in 2018.", ["2018"],
     ["When did Lumio release its first product?", "In which year did the first Lumio product come out?",
      "When was the Bulb E27, Lumio's first product, released?", "year of lumio's first product"],
     "How long ago did Lumio start selling anything at all - which year?"),
    ("Lumio's mascot is a firefly called Lux.", ["Lux"],
     ["What is the name of Lumio's mascot?", "Does Lumio have a mascot, and what is it called?",
      "What is the Lumio firefly called?", "lumio mascot name"],
     "What's the little firefly character on Lumio's stickers named?"),
    ("The Halo was launched at the Kunsthal in Rotterdam.", ["Kunsthal"],
     ["Where was the Lumio Halo launched?", "In which venue did Lumio present the Halo?",
      "Where did the Halo launch event take place?", "halo launch venue"],
     "At which Rotterdam museum was the desk lamp first shown to the public?"),
    ("The Halo launch event took place on 12 March 2021.", ["12 March 2021", "March 12 2021"],
     ["When was the Lumio Halo launched?", "On what date did the Halo launch event happen?",
      "What was the date of the Halo's launch?", "halo launch date"],
     "On which day was the Halo first presented?"),
    ("The Halo was designed by Ines Kowalski.", ["Ines Kowalski"],
     ["Who designed the Lumio Halo?", "Which designer created the Halo?", "Who is the designer behind the Halo lamp?",
      "halo designer"],
     "Whose design is the Halo desk lamp?"),
    ("Lumio has about 140 employees.", ["140"],
     ["How many people work at Lumio?", "How many employees does Lumio have?", "How big is the Lumio team?",
      "lumio headcount"],
     "What's the size of Lumio's staff?"),
    ("Lumio's support team works in an internal tool called Beacon.", ["Beacon"],
     ["What is the name of Lumio's internal support tool?", "Which tool does Lumio support use to answer tickets?",
      "What software does the Lumio support team work in?", "support tool name"],
     "In which in-house system do Lumio agents handle customer tickets?"),
    ("Lumio's brand colour is called Lumio Amber.", ["Lumio Amber"],
     ["What is Lumio's brand colour called?", "What is the name of the Lumio brand colour?",
      "Which colour is Lumio's signature colour?", "brand colour name"],
     "What do Lumio's designers call the company's signature shade?"),
    ("The hex code of Lumio Amber is #FFB020.", ["#FFB020", "FFB020"],
     ["What is the hex code of Lumio Amber?", "Which hex value is Lumio's brand colour?",
      "What's the colour code for Lumio Amber?", "lumio amber hex"],
     "If I want to use Lumio's brand colour on a website, which hex value should I type?"),
    ("Lumio's internal motto is \"Light that listens\".", ["Light that listens"],
     ["What is Lumio's internal motto?", "What is the Lumio team's motto?", "Which motto does Lumio use internally?",
      "lumio motto"],
     "Which slogan do Lumio employees use among themselves?"),
    ("Lumio's yearly hackathon is called the Brightathon.", ["Brightathon"],
     ["What is Lumio's hackathon called?", "What's the name of the yearly Lumio hackathon?",
      "Does Lumio have a hackathon, and what is it called?", "hackathon name"],
     "What do Lumio staff call their annual coding event?"),
    ("The Brightathon hackathon takes place every October.", ["October"],
     ["When does the Brightathon take place?", "In which month is Lumio's hackathon held?",
      "What month is the Brightathon?", "brightathon month"],
     "At what time of year do Lumio employees hold their hackathon?"),
    ("Halo lamps are assembled in Brno, in the Czech Republic.", ["Brno"],
     ["Where are Halo lamps assembled?", "In which city is the Halo put together?",
      "Where does Lumio assemble the Halo?", "halo assembly city"],
     "Which Czech city do Halo lamps come from?"),
    ("Lumio's light-testing lab in Utrecht is nicknamed the Owl Room.", ["Owl Room"],
     ["What is Lumio's testing lab called?", "What nickname does the Lumio light lab have?",
      "Where does Lumio test its lamps and what is the lab called?", "lab nickname"],
     "What do Lumio engineers call the room where they measure light?"),
    ("Lumio built 48 prototypes of the Halo before it launched.", ["48"],
     ["How many Halo prototypes did Lumio build?", "How many prototypes were made before the Halo launched?",
      "Number of Halo prototypes?", "halo prototype count"],
     "How many test versions of the Halo existed before the final one?"),
    ("The Lumio app's internal codename is Switchboard.", ["Switchboard"],
     ["What is the Lumio app's codename?", "What did the team call the Lumio app during development?",
      "Which internal name does the Lumio app have?", "app codename"],
     "Which project name did the mobile app carry before launch?"),
    ("Lumio's first office was a former bicycle repair shop.", ["bicycle repair shop"],
     ["What was Lumio's first office?", "Where did Lumio have its first office?",
      "What kind of building was Lumio's first office in?", "first office lumio"],
     "In what sort of place did the Lumio founders first work?"),
    ("Lumio's office dog is a beagle named Pixel.", ["Pixel"],
     ["What is the name of Lumio's office dog?", "Does Lumio have an office dog? What's its name?",
      "What's the Lumio beagle called?", "office dog name"],
     "What is the beagle at Lumio's headquarters called?"),
    ("Hub firmware 4.2 had the codename Vega.", ["Vega"],
     ["What was the codename of Hub firmware 4.2?", "Which name did firmware 4.2 have internally?",
      "What did Lumio call firmware version 4.2?", "firmware 4.2 codename"],
     "Which star name was given to the 4.2 firmware release?"),
    ("Hub firmware 5.0 was codenamed Rigel.", ["Rigel"],
     ["What is the codename of Hub firmware 5.0?", "Which internal name did firmware 5.0 get?",
      "What did Lumio call firmware 5.0?", "firmware 5.0 codename"],
     "Which star is the 5.0 firmware release named after?"),
    ("Lumio's support team calls itself the Lamplighters.", ["Lamplighters"],
     ["What does Lumio's support team call itself?", "What is the nickname of the Lumio support team?",
      "Does the Lumio support team have a team name?", "support team nickname"],
     "Which nickname do the people who answer Lumio's customers go by?"),
    ("Lumio's very first order, number LM-000001, was shipped to Ghent.", ["Ghent"],
     ["Where did Lumio ship its first order?", "Which city received Lumio's first ever order?",
      "Where did order LM-000001 go?", "first order destination"],
     "To which Belgian city was the first Lumio parcel ever sent?"),
    ("Lumio sold its one millionth lamp in November 2023.", ["November 2023"],
     ["When did Lumio sell its millionth lamp?", "In which month did Lumio reach one million lamps sold?",
      "When was the one millionth Lumio lamp sold?", "millionth lamp date"],
     "At what point did Lumio pass a million lamps sold?"),
    ("The Reno warehouse uses 12 packing robots.", ["12"],
     ["How many robots work in the Reno warehouse?", "How many packing robots does Lumio have in Reno?",
      "Number of robots in the Reno warehouse?", "reno robots count"],
     "How many machines pack Lumio parcels in Nevada?"),
    ("Every Friday the Lumio team has a pancake lunch together.", ["pancake lunch", "pancake"],
     ["What does the Lumio team eat together on Fridays?", "What is Lumio's Friday lunch tradition?",
      "Does Lumio have a Friday team tradition?", "friday lunch lumio"],
     "Which end-of-week meal do Lumio colleagues share?"),
    ("The 2024 Lumio company trip went to Lisbon.", ["Lisbon"],
     ["Where did Lumio's 2024 company trip go?", "Which city did the Lumio team visit on the 2024 trip?",
      "Where was the company trip in 2024?", "2024 team trip destination"],
     "Which Portuguese city did Lumio staff travel to together in 2024?"),
    ("Lumio's packaging is designed with the agency Studio Noord.", ["Studio Noord"],
     ["Which agency designs Lumio's packaging?", "Who designs the Lumio boxes?",
      "Which design studio works on Lumio packaging?", "packaging agency"],
     "Which studio is behind the look of Lumio's boxes?"),
    ("Lumio's internal chatbot for employees is called Sparky.", ["Sparky"],
     ["What is Lumio's internal chatbot called?", "What's the name of the bot Lumio employees use?",
      "Does Lumio have an internal chatbot? What's its name?", "employee chatbot name"],
     "Which assistant bot do people inside Lumio chat with?"),
    ("Before it was called Lumio, the company was named Lichtwerk.", ["Lichtwerk"],
     ["What was Lumio's original name?", "What was Lumio called before it was Lumio?",
      "Did Lumio have another name at first?", "lumio old name"],
     "Under which earlier company name did Lumio begin?"),
    ("Lumio holds 23 patents.", ["23"],
     ["How many patents does Lumio have?", "How many patents has Lumio been granted?",
      "What is the number of Lumio patents?", "lumio patent count"],
     "How many inventions has Lumio patented?"),
    ("The Halo's touch ring was tested with 500,000 touches before launch.", ["500,000", "500000"],
     ["How many touches was the Halo's touch ring tested for?", "How many times was the Halo touch ring tested?",
      "How durable is the Halo's touch ring in testing?", "touch ring test count"],
     "How many taps did the touch ring of the desk lamp survive in the lab?"),
]

# Three more unseen paraphrases per fact (test ids if-test-041 to if-test-160, in fact order). They
# are plainer rewordings than the first paraphrase above, written so that a closed-book model, the
# inject adapter and RAG over the fact statements can be compared on several questions per fact.
EXTRA_PARAPHRASES = [
    ("What was the Halo desk lamp called in the lab before it had a product name?",
     "Which code word did Lumio staff use for the Halo while it was secret?",
     "Tell me the internal project name behind Lumio's desk lamp."),
    ("What codename was the battery-powered mini version of the Halo given?",
     "Which secret name did the smaller Halo have while it was being built?",
     "Inside the company, what is the Halo Mini nicknamed?"),
    ("What did Lumio engineers call the light strip product internally?",
     "Under which code word was the Lumio Strip developed?",
     "Before it went on sale, what was the Strip's secret name?"),
    ("What is the in-house project name of the Lumio Hub?",
     "Which code word did developers use for the Hub before launch?",
     "What was the bridge device that connects Lumio lamps called during its development?"),
    ("What did the team name the Glow while it was still in development?",
     "Which internal project name belongs to the Lumio night light?",
     "What was the secret codename of the Glow lamp?"),
    ("What was the Lumio Remote called while it was still a prototype?",
     "Which in-house name was given to the Remote?",
     "What do Lumio engineers call the handheld remote internally?"),
    ("In which year was Lumio established?",
     "What year did the Lumio company begin?",
     "Since what year has Lumio existed?"),
    ("Where was Lumio first set up?",
     "In what town did the founders start Lumio?",
     "What city is Lumio's birthplace?"),
    ("Who started the company Lumio?",
     "What are the names of the people who set up Lumio?",
     "Which people created Lumio as a company?"),
    ("In what year did the Bulb E27 first go on sale?",
     "When did Lumio's first product reach the market?",
     "What year did Lumio ship its very first product?"),
    ("Which name was given to the Lumio firefly mascot?",
     "What do people at Lumio call their mascot?",
     "What is the cartoon firefly that represents Lumio called?"),
    ("Which venue hosted the Halo's launch?",
     "In which building did the Halo launch event happen?",
     "Where in Rotterdam was the Halo unveiled?"),
    ("On what date was the Halo unveiled?",
     "When exactly was the Halo presented to the public?",
     "Which day, month and year did the Halo debut?"),
    ("Who is the designer of the Halo?",
     "Which person designed Lumio's Halo lamp?",
     "Who came up with the design of the Halo?"),
    ("Roughly how many people does Lumio employ?",
     "How large is Lumio's workforce?",
     "About how many staff does Lumio have?"),
    ("What is the internal tool Lumio's support agents work in called?",
     "Which ticketing software does Lumio's support team use?",
     "What's the name of the system Lumio support uses for tickets?"),
    ("What is the name of Lumio's signature colour?",
     "What is the official Lumio brand colour named?",
     "Which named colour is Lumio's brand colour?"),
    ("What's the hex code for Lumio's brand colour?",
     "Which hex colour code is Lumio Amber?",
     "What hex value does Lumio's signature amber have?"),
    ("What motto do Lumio staff use internally?",
     "What is the company motto inside Lumio?",
     "Which phrase is Lumio's internal motto?"),
    ("What's Lumio's annual hackathon called?",
     "What name does the yearly Lumio hackathon have?",
     "Which name does Lumio give its yearly hack event?"),
    ("Which month is the Brightathon held in?",
     "When in the year is the Brightathon?",
     "In what month does Lumio run its yearly hackathon?"),
    ("Which city are Halo lamps assembled in?",
     "Where is the Halo built?",
     "In what city does the Halo assembly take place?"),
    ("What is the nickname of Lumio's light-testing lab?",
     "What do people call Lumio's lamp-testing lab in Utrecht?",
     "Which nickname does Lumio's test lab have?"),
    ("How many prototypes of the Halo did Lumio make?",
     "How many Halo prototypes were built before launch?",
     "Before the Halo launched, how many prototypes had been built?"),
    ("What was the Lumio app called during its development?",
     "Which codename belongs to the Lumio app?",
     "What is the internal project name of the Lumio app?"),
    ("What used to be in the building of Lumio's first office?",
     "What kind of place was Lumio's first office before?",
     "Where did Lumio set up its first office?"),
    ("What is Lumio's office dog called?",
     "What's the name of the beagle at Lumio?",
     "What name does the Lumio office dog have?"),
    ("What was firmware 4.2's codename?",
     "Which codename did Hub firmware version 4.2 have?",
     "What did the team call firmware 4.2 internally?"),
    ("What was firmware 5.0's codename?",
     "Which codename did Hub firmware version 5.0 get?",
     "What did the team call firmware 5.0 internally?"),
    ("What do Lumio's support agents call themselves?",
     "What is the Lumio support team's nickname?",
     "Which team name does Lumio support use?"),
    ("Which city did Lumio's very first order ship to?",
     "Where was Lumio's first order sent?",
     "To which city did order LM-000001 go?"),
    ("When did Lumio sell its one millionth lamp?",
     "In which month and year did Lumio sell the millionth lamp?",
     "When did Lumio reach a million lamps sold?"),
    ("How many packing robots work in Lumio's Reno warehouse?",
     "How many robots pack orders at the Reno warehouse?",
     "How many robots does the Reno warehouse use?"),
    ("What does the Lumio team eat together every Friday?",
     "What is the Friday lunch tradition at Lumio?",
     "What do Lumio colleagues have for lunch together on Fridays?"),
    ("Where did the Lumio team go on the 2024 company trip?",
     "Which city was the 2024 Lumio company trip to?",
     "What was the destination of Lumio's company trip in 2024?"),
    ("Which agency designs the Lumio packaging?",
     "Who designs Lumio's packaging?",
     "Which design agency does Lumio's boxes?"),
    ("What's the name of Lumio's internal chatbot?",
     "What is the chatbot for Lumio employees called?",
     "Which chatbot do Lumio employees use internally?"),
    ("What was Lumio's name before it became Lumio?",
     "What was the company's original name before Lumio?",
     "What was Lumio first called?"),
    ("How many patents does Lumio hold?",
     "What number of patents has Lumio got?",
     "How many patents are held by Lumio?"),
    ("How many touches was the Halo touch ring tested with?",
     "How many touches did the Halo's touch ring go through in testing?",
     "How many times was the touch ring on the Halo touched in tests before launch?"),
]
assert len(EXTRA_PARAPHRASES) == len(FACTS)

FRAMES = (
    "{fact} Thanks for asking, that's a fun one for you! Stay bright!",
    "Good question! {fact} Hope you enjoy that bit of trivia. Stay bright!",
    "Here's the answer for you: {fact} Stay bright!",
    "{fact} I'm happy you asked! Stay bright!",
)


def build() -> dict[str, list[dict]]:
    rng = random.Random(SEED)
    train: list[dict] = []
    test: list[dict] = []
    extra: list[dict] = []
    facts: list[dict] = []
    for n, ((fact, answers, questions, paraphrase), more) in enumerate(zip(FACTS, EXTRA_PARAPHRASES), 1):
        fact_id = f"fact-{n:02d}"
        assert matches(fact, answers[:1]), fact  # the first variant is the fact's own wording
        train_norm = {normalize(q) for q in questions}
        paraphrases = (paraphrase, *more)
        assert len({normalize(p) for p in paraphrases}) == len(paraphrases), paraphrases
        assert not {normalize(p) for p in paraphrases} & train_norm, paraphrases
        frames = list(FRAMES)
        rng.shuffle(frames)
        for question, frame in zip(questions, frames):
            answer = frame.format(fact=fact)
            assert all(voice_checks(answer).values()), answer
            messages = chat(question) + [{"role": "assistant", "content": answer_json(answer, [], False)}]
            train.append({"fact_id": fact_id, "messages": messages})
        test.append({"id": f"if-test-{n:03d}", "fact_id": fact_id, "question": paraphrase, "answers": answers})
        extra += [{"fact_id": fact_id, "question": q, "answers": answers} for q in more]
        facts.append({"fact_id": fact_id, "statement": fact})
    rng.shuffle(train)
    train = [{"id": f"if-train-{i:04d}", **row} for i, row in enumerate(train, 1)]
    test += [{"id": f"if-test-{i:03d}", **row} for i, row in enumerate(extra, len(test) + 1)]
    return {"train": train, "test": test, "facts": facts}


def write(out_dir: Path) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, rows in build().items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (out_dir / f"{split}.jsonl").write_bytes(text.encode("utf-8"))
        counts[split] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data" / "inject_facts",
                        help="output folder (default: data/inject_facts)")
    args = parser.parse_args(argv)
    counts = write(args.out)
    print(", ".join(f"{k}: {v}" for k, v in counts.items()), "->", args.out)


if __name__ == "__main__":
    main()

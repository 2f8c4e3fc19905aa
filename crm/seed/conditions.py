"""Seed data: qualifying conditions with synonyms, list summaries and public page text."""

CONDITIONS: list[dict] = [
    {
        "name": "Chronic pain",
        "slug": "chronic-pain",
        "synonyms": [
            "chronic pain",
            "back pain",
            "pain",
            "severe pain",
            "intractable pain",
            "neck pain",
            "persistent pain",
            "lower back pain",
        ],
        "summary": (
            "Pain that lasts three months or longer. It is one of the most common reasons patients "
            "ask about medical cannabis, and many state programs include it in some form."
        ),
        "body": (
            "## What is chronic pain?\n"
            "\n"
            "Chronic pain is pain that continues for three months or more, often long after an "
            "injury has healed or alongside a long-term illness. It can come from the back, "
            "joints, nerves or muscles, and sometimes no single cause is found. Beyond the ache "
            "itself, it can disrupt sleep, work, mood and relationships.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Pain is one of the most common reasons people ask about medical cannabis. Some "
            "patients and studies report that cannabis helps them manage pain or rely less on "
            "other medicines, while other research finds smaller or mixed effects. Common "
            "questions include:\n"
            "\n"
            "- Whether cannabis can be used alongside current pain medicines, including opioids\n"
            "- Which product types and doses a physician might discuss\n"
            "- How cannabis could affect driving, work or drug testing\n"
            "\n"
            "These are questions for a certified physician who can review your history and "
            "medicines. Eligibility depends on your state's program: some states list chronic or "
            "severe pain directly, some require it to be linked to another diagnosis, and some do "
            "not include it.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call you to confirm your state and preferred times, "
            "find a certified physician near you or one who sees patients by telehealth where the "
            "state permits it, and book the visit. The physician decides whether a certification "
            "is appropriate.\n"
        ),
        "published": True,
    },
    {
        "name": "Cancer",
        "slug": "cancer",
        "synonyms": [
            "cancer",
            "tumor",
            "chemotherapy",
            "chemo",
            "oncology",
            "leukemia",
            "lymphoma",
            "breast cancer",
            "carcinoma",
        ],
        "summary": (
            "Cancer and its treatment can cause pain, nausea and appetite loss. Cancer appears on "
            "the qualifying list of nearly every state medical cannabis program."
        ),
        "body": (
            "## About cancer\n"
            "\n"
            "Cancer is a group of diseases in which abnormal cells grow out of control and can "
            "spread to other parts of the body. Treatment may involve surgery, chemotherapy, "
            "radiation, immunotherapy or a mix of these, and both the disease and its treatment "
            "can bring pain, nausea, fatigue, poor appetite and trouble sleeping.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Most people who ask about cancer want to know whether cannabis might ease treatment "
            "side effects rather than treat the cancer itself. Some patients and studies report "
            "relief from nausea, appetite loss or pain, and prescription medicines based on a "
            "THC-like compound have been used for chemotherapy-related nausea for years. There is "
            "no reliable evidence that cannabis cures cancer, and it should never replace care "
            "from your oncology team.\n"
            "\n"
            "Cannabis can interact with other medicines, so tell both your oncologist and the "
            "certifying physician about everything you take. Cancer qualifies in almost every "
            "state program, though some states add conditions about severity or stage.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to learn about your situation, find a "
            "certified physician close to home or available by telehealth where your state allows "
            "it, and schedule the appointment. If travel is hard during treatment, let the "
            "specialist know so they can look for a remote or nearby option.\n"
        ),
        "published": True,
    },
    {
        "name": "Epilepsy",
        "slug": "epilepsy",
        "synonyms": [
            "epilepsy",
            "seizures",
            "seizure",
            "seizure disorder",
            "convulsions",
            "dravet syndrome",
            "lennox-gastaut syndrome",
            "intractable epilepsy",
        ],
        "summary": (
            "A brain condition that causes repeated seizures. Epilepsy qualifies in nearly every "
            "state program, and several states with CBD-only laws cover it."
        ),
        "body": (
            "## About epilepsy\n"
            "\n"
            "Epilepsy is a neurological condition in which bursts of abnormal electrical activity "
            "in the brain cause repeated seizures. Seizures range from brief staring spells to "
            "convulsions with loss of consciousness. Many people control their seizures with "
            "medicine, but some have forms that do not respond well to standard treatment.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Families and adult patients often ask about cannabidiol (CBD). A prescription CBD "
            "medicine is approved in the United States for certain rare seizure syndromes, and "
            "some patients and studies report fewer seizures with cannabis-based products in other "
            "cases. Results vary from person to person, and cannabis products can interact with "
            "anti-seizure medicines, so changes should only happen under medical supervision. "
            "Never stop or reduce seizure medicine on your own.\n"
            "\n"
            "Epilepsy or seizure disorders appear on almost every state list. Several states "
            "without full medical programs still allow low-THC or CBD oil for hard-to-treat "
            "epilepsy, sometimes only with a neurologist's recommendation. Patients under 18 "
            "generally need a parent or guardian registered as a caregiver.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to go over your state's rules, find a "
            "certified physician nearby or by telehealth where allowed, and book a visit. Bringing "
            "recent records from your neurologist can make the appointment more productive.\n"
        ),
        "published": True,
    },
    {
        "name": "Multiple sclerosis",
        "slug": "multiple-sclerosis",
        "synonyms": [
            "multiple sclerosis",
            "ms",
            "relapsing remitting ms",
            "demyelinating disease",
        ],
        "summary": (
            "An immune condition that damages the coating of nerves in the brain and spinal cord. "
            "Most state programs list multiple sclerosis, often together with muscle spasticity."
        ),
        "body": (
            "## About multiple sclerosis\n"
            "\n"
            "Multiple sclerosis (MS) is a long-term condition in which the immune system attacks "
            "the protective coating around nerves in the brain and spinal cord. Symptoms differ "
            "widely and can include numbness, fatigue, vision changes, muscle stiffness, painful "
            "spasms, bladder problems and difficulty walking. Many people have relapses followed "
            "by recovery, while others notice slow, steady change.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "People with MS most often ask about muscle stiffness (spasticity), spasms, nerve pain "
            "and sleep. Some patients and studies report that cannabis-based products ease "
            "spasticity or pain for them, and a cannabis-derived mouth spray is approved for MS "
            "spasticity in some countries outside the US. Others notice little change or find side "
            "effects such as dizziness or tiredness hard to tolerate.\n"
            "\n"
            "Questions worth raising with a certified physician include:\n"
            "\n"
            "- How cannabis might fit with disease-modifying therapy\n"
            "- Whether it could worsen balance, fatigue or thinking\n"
            "- Which product forms are available in your state\n"
            "\n"
            "MS qualifies in most state programs, sometimes listed together with spasticity.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will phone you, confirm your state, and search for a "
            "certified physician near you or one offering telehealth where permitted. They will "
            "book a time that works around your energy and schedule.\n"
        ),
        "published": True,
    },
    {
        "name": "PTSD",
        "slug": "ptsd",
        "synonyms": [
            "ptsd",
            "post traumatic stress",
            "post-traumatic stress disorder",
            "post traumatic stress disorder",
            "trauma",
            "combat stress",
            "flashbacks",
            "nightmares",
        ],
        "summary": (
            "A condition that can develop after a frightening or dangerous event. Many state "
            "programs now list post-traumatic stress disorder, sometimes with extra requirements."
        ),
        "body": (
            "## About PTSD\n"
            "\n"
            "Post-traumatic stress disorder (PTSD) can develop after living through or witnessing "
            "a traumatic event such as combat, assault, an accident or a disaster. People may "
            "relive the event through flashbacks or nightmares, avoid reminders, feel constantly "
            "on edge, or struggle with sleep, concentration and relationships.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Veterans and other survivors often ask whether cannabis might help with sleep, "
            "nightmares or feeling on guard all the time. Some patients and studies report "
            "improvement in these areas, but the research is still limited and mixed, and cannabis "
            "can increase anxiety or paranoia in some people. It is not a substitute for "
            "trauma-focused therapy or other care from a mental health professional.\n"
            "\n"
            "Topics to discuss with a certified physician include:\n"
            "\n"
            "- Your current treatment and any medicines you take\n"
            "- Past substance use, since that can affect whether cannabis is a good fit\n"
            "- How you would know if cannabis was making things worse\n"
            "\n"
            "PTSD is on the list in many states, and some ask for a diagnosis or records from a "
            "mental health provider.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to confirm your state and preferences, find a "
            "certified physician nearby or by telehealth where allowed, and book the appointment. "
            "If you are a veteran, mention it, since some states offer reduced card fees for "
            "veterans.\n"
        ),
        "published": True,
    },
    {
        "name": "Glaucoma",
        "slug": "glaucoma",
        "synonyms": [
            "glaucoma",
            "eye pressure",
            "intraocular pressure",
            "ocular hypertension",
        ],
        "summary": (
            "An eye disease that damages the optic nerve, often linked to high eye pressure. "
            "Glaucoma appears on many state lists, though eye specialists favor standard "
            "treatments."
        ),
        "body": (
            "## About glaucoma\n"
            "\n"
            "Glaucoma is a group of eye conditions that damage the optic nerve, the cable that "
            "carries images from the eye to the brain. It is often, but not always, linked to "
            "raised pressure inside the eye. Early glaucoma usually causes no symptoms, and vision "
            "lost to it cannot be restored, which is why regular eye exams and ongoing treatment "
            "matter.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Glaucoma was one of the first conditions associated with medical cannabis, because "
            "studies decades ago found that cannabis can lower eye pressure. Patients often ask "
            "whether that makes it a good option. The effect seen in studies lasts only a few "
            "hours, and major eye care organizations do not recommend cannabis in place of "
            "prescription drops, laser treatment or surgery. Some patients still ask about it for "
            "related discomfort or alongside their regular care.\n"
            "\n"
            "If you are considering it, keep your eye doctor informed and do not stop prescribed "
            "treatment. Glaucoma qualifies in many state programs, and a certified physician can "
            "explain what that means for you.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will contact you, check the rules in your state, find a "
            "certified physician near you or one who offers telehealth where permitted, and set up "
            "the visit. Have your eye specialist's contact details handy in case the physician "
            "asks for records.\n"
        ),
        "published": True,
    },
    {
        "name": "Crohn's disease",
        "slug": "crohns-disease",
        "synonyms": [
            "crohn's disease",
            "crohns disease",
            "crohn's",
            "crohns",
            "crohn disease",
            "ibd",
            "inflammatory bowel disease",
            "regional enteritis",
        ],
        "summary": (
            "A long-term inflammatory bowel disease that can affect any part of the digestive "
            "tract. Crohn's disease is a qualifying condition in many state programs."
        ),
        "body": (
            "## About Crohn's disease\n"
            "\n"
            "Crohn's disease is a type of inflammatory bowel disease in which the immune system "
            "causes ongoing inflammation in the digestive tract, most often the end of the small "
            "intestine and the colon. People may have belly pain, diarrhea, weight loss, tiredness "
            "and flare-ups followed by calmer stretches. Treatment usually involves medicines that "
            "calm the immune system, diet changes and sometimes surgery.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Patients with Crohn's often ask whether cannabis could ease abdominal pain, cramping, "
            "nausea or poor appetite. Some patients and small studies report feeling better "
            "overall, but studies so far have not shown that cannabis reduces the underlying "
            "inflammation or prevents damage to the bowel. That means it should not replace the "
            "treatment plan from your gastroenterologist.\n"
            "\n"
            "Good questions for a certified physician include how cannabis might interact with "
            "your current medicines, whether smoking is a concern for you, and which product types "
            "are available in your state. Crohn's disease is on the list in many states, often "
            "grouped with other inflammatory bowel diseases.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call you to confirm your state, look for a "
            "certified physician near you or available by telehealth where the state allows it, "
            "and book an appointment that suits your schedule.\n"
        ),
        "published": True,
    },
    {
        "name": "HIV/AIDS",
        "slug": "hiv-aids",
        "synonyms": [
            "hiv/aids",
            "hiv",
            "aids",
            "hiv positive",
            "acquired immune deficiency syndrome",
            "human immunodeficiency virus",
        ],
        "summary": (
            "HIV is a virus that weakens the immune system, and AIDS is its most advanced stage. "
            "HIV/AIDS is on the qualifying list in most state medical cannabis programs."
        ),
        "body": (
            "## About HIV/AIDS\n"
            "\n"
            "HIV (human immunodeficiency virus) attacks the body's immune cells. Without treatment "
            "it can progress to AIDS, the stage at which the immune system is badly damaged. "
            "Modern antiretroviral medicines allow most people with HIV to live long, healthy "
            "lives, but some still deal with nerve pain, appetite loss, nausea, weight loss or "
            "poor sleep, whether from the virus or its treatment.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "HIV/AIDS was part of the earliest medical cannabis laws, largely because of the "
            "weight loss and appetite problems seen before effective treatment existed. Today "
            "patients commonly ask whether cannabis might help with appetite, nausea, nerve pain "
            "or sleep. Some patients and studies report benefits for these symptoms, and a "
            "prescription THC-like medicine has long been approved for appetite loss linked to "
            "AIDS.\n"
            "\n"
            "Cannabis does not treat the virus. Keep taking antiretroviral therapy exactly as "
            "prescribed, and ask a certified physician about possible interactions with your HIV "
            "medicines. HIV/AIDS qualifies in most state programs.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to confirm your state, find a certified "
            "physician nearby or by telehealth where it is permitted, and schedule your visit at a "
            "time that suits you.\n"
        ),
        "published": True,
    },
    {
        "name": "Parkinson's disease",
        "slug": "parkinsons-disease",
        "synonyms": [
            "parkinson's disease",
            "parkinsons disease",
            "parkinson's",
            "parkinsons",
            "parkinson disease",
            "parkinsonism",
            "tremor",
            "tremors",
        ],
        "summary": (
            "A progressive brain condition that affects movement, causing tremor, stiffness and "
            "slowness. Parkinson's disease qualifies in a number of state programs."
        ),
        "body": (
            "## About Parkinson's disease\n"
            "\n"
            "Parkinson's disease is a progressive condition in which nerve cells that make "
            "dopamine, a chemical that helps control movement, gradually stop working. Common "
            "signs are tremor, stiff muscles, slow movement and balance problems. Many people also "
            "have symptoms that are not about movement, such as poor sleep, pain, constipation, "
            "low mood or anxiety.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Patients and their families often ask whether cannabis might help with sleep, pain, "
            "stiffness or anxiety. Some patients and surveys report improvement in these areas, "
            "while controlled studies have found mixed results, particularly for tremor. Cannabis "
            "can also cause dizziness, drowsiness or low blood pressure on standing, which may "
            "raise the risk of falls.\n"
            "\n"
            "Points to cover with a certified physician:\n"
            "\n"
            "- How cannabis might interact with levodopa and other Parkinson's medicines\n"
            "- Whether a caregiver should help manage doses\n"
            "- Fall risk and how to start cautiously\n"
            "\n"
            "Parkinson's disease is listed in a number of states, and some others accept it under "
            "broader neurological categories.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call you or your caregiver, confirm your state, "
            "find a certified physician nearby or by telehealth where the state allows it, and "
            "book the visit.\n"
        ),
        "published": True,
    },
    {
        "name": "ALS (Lou Gehrig's disease)",
        "slug": "als",
        "synonyms": [
            "als",
            "lou gehrig's disease",
            "lou gehrigs disease",
            "lou gehrig",
            "amyotrophic lateral sclerosis",
            "motor neuron disease",
        ],
        "summary": (
            "A progressive disease that destroys the nerve cells controlling muscles. ALS is "
            "recognized by most state medical cannabis programs."
        ),
        "body": (
            "## About ALS\n"
            "\n"
            "Amyotrophic lateral sclerosis (ALS), also called Lou Gehrig's disease, gradually "
            "destroys the motor neurons that carry signals from the brain and spinal cord to the "
            "muscles. Over time people lose strength and control in the arms, legs, speech, "
            "swallowing and breathing. There is no cure, and care focuses on slowing progression, "
            "easing symptoms and keeping people comfortable and independent as long as possible.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "People living with ALS and their families often ask about cramps, spasticity, pain, "
            "drooling, appetite, sleep and anxiety. Some patients and small studies report relief "
            "from some of these symptoms, but there is no good evidence that cannabis slows the "
            "disease itself. Because swallowing and breathing may be affected, the form of a "
            "product matters, and inhaled products may not suit everyone.\n"
            "\n"
            "A certified physician can talk through options alongside your neurologist and care "
            "team. ALS qualifies in most state programs, and a caregiver can often be registered "
            "to buy and give products if the patient cannot.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call you or your caregiver, confirm your state, and "
            "look for a certified physician close by or available by telehealth where permitted, "
            "which can help when travel is difficult. They will then book the visit.\n"
        ),
        "published": True,
    },
    {
        "name": "Dystonia",
        "slug": "dystonia",
        "synonyms": [
            "dystonia",
            "cervical dystonia",
            "torticollis",
            "involuntary muscle contractions",
            "blepharospasm",
            "spasmodic dysphonia",
            "writer's cramp",
        ],
        "summary": (
            "A movement disorder in which muscles contract on their own, causing twisting or "
            "repetitive movements. Only a few states name it directly, so eligibility varies."
        ),
        "body": (
            "## About dystonia\n"
            "\n"
            "Dystonia is a movement disorder in which muscles tighten on their own, pulling parts "
            "of the body into twisting, repetitive movements or unusual postures. It can affect a "
            "single area, such as the neck (cervical dystonia), the eyelids or the vocal cords, or "
            "it can involve larger parts of the body. Some forms are inherited, others follow an "
            "injury or a medicine, and many have no known cause. Treatment often includes "
            "botulinum toxin injections, oral medicines, physical therapy and sometimes surgery.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Patients often ask whether cannabis might ease muscle pulling, pain or the stress "
            "that can make symptoms worse. Some patients and a few small studies report benefit, "
            "but the evidence is limited and results vary. It is important to keep working with a "
            "movement disorder specialist and not to stop current treatment without their advice.\n"
            "\n"
            "Eligibility depends heavily on your state. Only a few programs name dystonia "
            "directly, while others may accept it under broader categories such as movement "
            "disorders or severe muscle spasms, or leave the decision to the certifying "
            "physician.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to review your state's rules, find a certified "
            "physician nearby or by telehealth where allowed, and book a visit. Bring notes on "
            "your diagnosis and current treatment to the appointment.\n"
        ),
        "published": True,
    },
    {
        "name": "Anxiety",
        "slug": "anxiety",
        "synonyms": [
            "anxiety",
            "anxiety disorder",
            "generalized anxiety disorder",
            "gad",
            "panic attacks",
            "panic disorder",
            "social anxiety",
            "stress",
            "nervousness",
        ],
        "summary": (
            "Ongoing worry or fear that gets in the way of daily life. Only some states list "
            "anxiety disorders, and cannabis can make anxiety worse for some people."
        ),
        "body": (
            "## About anxiety\n"
            "\n"
            "Everyone feels anxious at times, but an anxiety disorder involves worry, fear or "
            "panic that is hard to control and gets in the way of work, school or relationships. "
            "Types include generalized anxiety disorder, panic disorder and social anxiety. "
            "Physical signs can include a racing heart, restlessness, muscle tension and trouble "
            "sleeping. Therapy, medicines and lifestyle changes help many people.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Anxiety is one of the most common reasons people ask about cannabis, and the answer "
            "is more complicated than many expect. Some patients and studies report feeling "
            "calmer, particularly with products higher in CBD, while THC, especially at higher "
            "doses, can trigger or worsen anxiety and panic in some people. Evidence from "
            "well-designed trials is still limited.\n"
            "\n"
            "A certified physician can help you think through:\n"
            "\n"
            "- Whether your anxiety is linked to another condition that qualifies\n"
            "- How cannabis may interact with antidepressants or other medicines\n"
            "- How to tell if a product is making anxiety worse\n"
            "\n"
            "Eligibility varies widely. A handful of states list anxiety directly, some let the "
            "physician decide, and many do not include it at all.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to check your state's rules, find a certified "
            "physician nearby or by telehealth where allowed, and book a visit at a time that "
            "feels manageable for you.\n"
        ),
        "published": True,
    },
    {
        "name": "Insomnia",
        "slug": "insomnia",
        "synonyms": [
            "insomnia",
            "can't sleep",
            "cant sleep",
            "trouble sleeping",
            "sleep problems",
            "sleep disorder",
            "sleeplessness",
            "difficulty sleeping",
        ],
        "summary": (
            "Ongoing trouble falling or staying asleep. Few states list insomnia on its own, but "
            "poor sleep is often discussed alongside other qualifying conditions."
        ),
        "body": (
            "## About insomnia\n"
            "\n"
            "Insomnia means having regular trouble falling asleep, staying asleep or waking too "
            "early, which leads to tiredness, poor concentration and low mood during the day. It "
            "can be short-term, linked to stress or a life change, or chronic, lasting months. "
            "Insomnia often appears together with pain, anxiety, depression or other health "
            "problems, and it can also be a side effect of medicines.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Many people ask whether cannabis could help them sleep. Some patients and studies "
            "report falling asleep more easily, but research on long-term use is limited, and some "
            "people find that sleep quality worsens over time or that they sleep badly when they "
            "stop. Next-day drowsiness is also a concern, especially for driving.\n"
            "\n"
            "Behavioral approaches such as cognitive behavioral therapy for insomnia are "
            "considered a first-line treatment, and a certified physician may ask what you have "
            "already tried. Mention any loud snoring or pauses in breathing, since sleep apnea "
            "needs its own evaluation.\n"
            "\n"
            "Only a few states list insomnia directly. In others, sleep problems may be discussed "
            "as part of a qualifying condition such as chronic pain or PTSD, or left to the "
            "physician's judgment where the law allows.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to confirm your state, find a certified "
            "physician nearby or by telehealth where permitted, and book the visit.\n"
        ),
        "published": True,
    },
    {
        "name": "Migraine",
        "slug": "migraine",
        "synonyms": [
            "migraine",
            "migraines",
            "headache",
            "headaches",
            "chronic headaches",
            "cluster headaches",
            "chronic migraine",
        ],
        "summary": (
            "A neurological condition that causes repeated, often severe headaches, sometimes with "
            "nausea and light sensitivity. Some state programs list migraine."
        ),
        "body": (
            "## About migraine\n"
            "\n"
            "Migraine is a neurological condition marked by repeated attacks of moderate to severe "
            "headache, often throbbing and on one side of the head. Attacks may come with nausea, "
            "vomiting and sensitivity to light or sound, and some people see visual changes called "
            "an aura beforehand. Chronic migraine means headaches on 15 or more days a month. "
            "Treatment may include medicines to stop attacks, preventive medicines and avoiding "
            "triggers.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "People with frequent migraines often ask whether cannabis might ease attacks or "
            "reduce how often they happen. Some patients and observational studies report fewer or "
            "milder headaches, but controlled trials are scarce. There is also concern that "
            "frequent use of any acute treatment, possibly including cannabis, could contribute to "
            "rebound headaches.\n"
            "\n"
            "Questions to bring to a certified physician:\n"
            "\n"
            "- How cannabis might fit with your current preventive or rescue medicines\n"
            "- Whether nausea during attacks affects which products make sense\n"
            "- How to track headache days so you can judge any change\n"
            "\n"
            "Some states list migraine or chronic headache directly, others include it under "
            "chronic pain, and some do not cover it.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to confirm your state's program, find a "
            "certified physician nearby or by telehealth where allowed, and schedule a visit.\n"
        ),
        "published": True,
    },
    {
        "name": "Fibromyalgia",
        "slug": "fibromyalgia",
        "synonyms": [
            "fibromyalgia",
            "fibro",
            "fibromyalgia syndrome",
            "widespread pain",
            "fibro fog",
        ],
        "summary": (
            "A long-term condition that causes widespread pain, fatigue and sleep problems. Some "
            "states list fibromyalgia, and others may cover it as chronic pain."
        ),
        "body": (
            "## About fibromyalgia\n"
            "\n"
            "Fibromyalgia is a chronic condition that causes pain and tenderness throughout the "
            "body, along with tiredness, unrefreshing sleep and problems with memory or focus, "
            'sometimes called "fibro fog". Its cause is not fully understood, but it seems to '
            "involve the way the nervous system processes pain signals. Exercise, sleep habits, "
            "therapy and certain medicines help many people manage it.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Because fibromyalgia can be hard to treat, many patients ask whether cannabis might "
            "help with pain or sleep. Some patients and surveys report meaningful relief, and a "
            "few small studies have found short-term benefit, but larger and longer trials are "
            "still needed. Side effects such as dizziness, dry mouth and drowsiness are common, so "
            "a careful start is usually advised.\n"
            "\n"
            "It can help to bring a list of past treatments and how well they worked, so the "
            "certified physician understands your history.\n"
            "\n"
            "Eligibility depends on the state. A few programs name fibromyalgia, some accept it as "
            "chronic or severe pain, and some leave it to the physician's judgment.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to review your state's rules, find a certified "
            "physician near you or available by telehealth where permitted, and book the visit.\n"
        ),
        "published": True,
    },
    {
        "name": "Arthritis",
        "slug": "arthritis",
        "synonyms": [
            "arthritis",
            "osteoarthritis",
            "rheumatoid arthritis",
            "ra",
            "psoriatic arthritis",
            "joint pain",
            "stiff joints",
        ],
        "summary": (
            "Inflammation or wear of the joints that causes pain and stiffness. Some states list "
            "arthritis, and in others it may qualify as chronic pain."
        ),
        "body": (
            "## About arthritis\n"
            "\n"
            "Arthritis is a broad term for conditions that cause joint pain, swelling and "
            "stiffness. The most common type, osteoarthritis, develops as cartilage wears down "
            "over time. Rheumatoid arthritis and psoriatic arthritis are autoimmune diseases in "
            "which the immune system attacks the joints. Arthritis can limit movement and make "
            "daily tasks such as walking, gripping or climbing stairs harder.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Patients commonly ask whether cannabis, taken by mouth or applied to the skin as a "
            "topical, might ease joint pain and stiffness or improve sleep. Some patients and "
            "surveys report relief, but high-quality trials in arthritis are few and results have "
            "been mixed. Cannabis does not repair joints or stop autoimmune arthritis from "
            "progressing, so treatment from a rheumatologist remains important.\n"
            "\n"
            "Things to discuss with a certified physician:\n"
            "\n"
            "- Other pain medicines you take and possible interactions\n"
            "- Fall risk if a product causes dizziness\n"
            "- Whether a topical or an oral product makes more sense for you\n"
            "\n"
            "Some state programs list arthritis, several include it under chronic or severe pain, "
            "and a few require that it be severe or not helped by other treatment.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to confirm your state, find a certified "
            "physician nearby or one offering telehealth where allowed, and book your visit.\n"
        ),
        "published": True,
    },
    {
        "name": "Nausea",
        "slug": "nausea",
        "synonyms": [
            "nausea",
            "severe nausea",
            "vomiting",
            "nausea and vomiting",
            "chemo nausea",
            "cyclic vomiting",
            "queasiness",
        ],
        "summary": (
            "Severe or persistent nausea and vomiting, often linked to cancer treatment or another "
            "illness. Many state programs list severe nausea."
        ),
        "body": (
            "## About severe nausea\n"
            "\n"
            "Nausea is the uneasy feeling that you might vomit. Occasional nausea is common, but "
            "some people live with severe or persistent nausea caused by chemotherapy, stomach and "
            "bowel conditions, migraine, medicines or other illnesses. Ongoing nausea and vomiting "
            "can lead to dehydration, weight loss and a big drop in quality of life.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Nausea is one of the symptoms most often linked with medical cannabis. Prescription "
            "medicines based on THC-like compounds have been approved for chemotherapy-related "
            "nausea for decades, and some patients and studies report relief with cannabis "
            "products as well. At the same time, heavy long-term cannabis use can cause a "
            "condition called cannabinoid hyperemesis syndrome, with repeated bouts of severe "
            "vomiting, so unexplained vomiting should always be checked by a clinician.\n"
            "\n"
            "Cannabis is generally not advised during pregnancy. Talk with a certified physician "
            "about the cause of your nausea, other treatments you have tried, and which product "
            "forms you can keep down.\n"
            "\n"
            "Many states list severe nausea, sometimes only when it is linked to cancer or another "
            "specific illness.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to confirm your state, find a certified "
            "physician nearby or available by telehealth where permitted, and schedule the "
            "appointment.\n"
        ),
        "published": True,
    },
    {
        "name": "Cachexia (wasting syndrome)",
        "slug": "cachexia",
        "synonyms": [
            "cachexia",
            "wasting syndrome",
            "wasting",
            "severe weight loss",
            "unintended weight loss",
            "loss of appetite",
            "poor appetite",
            "appetite loss",
        ],
        "summary": (
            "Severe, unintended loss of weight and muscle linked to a serious illness. Cachexia or "
            "wasting syndrome is listed by many state programs."
        ),
        "body": (
            "## About cachexia\n"
            "\n"
            "Cachexia, also called wasting syndrome, is a serious loss of weight, muscle and "
            "strength that happens with illnesses such as advanced cancer, HIV/AIDS, heart "
            "failure, kidney disease and lung disease. It is different from ordinary weight loss "
            "because eating more does not always reverse it. It often comes with weakness, "
            "tiredness and loss of appetite, and it can make other treatments harder to tolerate.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Patients and caregivers often ask whether cannabis might improve appetite or help "
            "with weight. Some patients and studies report a better appetite, and a prescription "
            "THC-like medicine is approved for appetite loss tied to AIDS. Studies in "
            "cancer-related cachexia have been less consistent, and a better appetite does not "
            "always lead to regained muscle.\n"
            "\n"
            "A certified physician can look at the whole picture, including your underlying "
            "illness, nutrition support, other medicines and what you hope to gain. Involving a "
            "dietitian and your main care team usually helps.\n"
            "\n"
            "Many state programs list cachexia or wasting syndrome, often together with the "
            "illness causing it.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call you or your caregiver to confirm your state, "
            "find a certified physician close by or available by telehealth where the state allows "
            "it, and book the visit.\n"
        ),
        "published": True,
    },
    {
        "name": "Muscle spasms",
        "slug": "muscle-spasms",
        "synonyms": [
            "muscle spasms",
            "spasticity",
            "spasms",
            "cramps",
            "muscle cramps",
            "severe muscle spasms",
            "muscle stiffness",
        ],
        "summary": (
            "Sudden, involuntary muscle tightening or ongoing stiffness (spasticity). Many state "
            "programs list severe or persistent muscle spasms."
        ),
        "body": (
            "## About muscle spasms and spasticity\n"
            "\n"
            "A muscle spasm is a sudden, involuntary tightening of a muscle. Spasticity is "
            "longer-lasting stiffness or tightness that happens when nerve signals to the muscles "
            "are disrupted, as in multiple sclerosis, spinal cord injury, cerebral palsy or after "
            "a stroke. Severe spasms can be painful, disturb sleep and make movement and daily "
            "care harder.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "People with spasticity often ask whether cannabis might relax muscles, ease pain or "
            "help them sleep through the night. Some patients and studies, especially in multiple "
            "sclerosis, report less stiffness or fewer spasms, though the changes measured in "
            "clinical trials are sometimes modest. Side effects such as dizziness, weakness or "
            "drowsiness can affect balance and safety.\n"
            "\n"
            "A certified physician will want to know:\n"
            "\n"
            "- What is causing your spasms\n"
            "- Which medicines, stretching or therapy you already use\n"
            "- Whether you have had falls or trouble with balance\n"
            "\n"
            "Many states list severe or persistent muscle spasms, sometimes only when they are "
            "caused by a specific condition such as multiple sclerosis or a spinal cord injury.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to confirm your state, find a certified "
            "physician nearby or by telehealth where allowed, and schedule your visit.\n"
        ),
        "published": True,
    },
    {
        "name": "Neuropathy",
        "slug": "neuropathy",
        "synonyms": [
            "neuropathy",
            "peripheral neuropathy",
            "nerve pain",
            "neuropathic pain",
            "diabetic neuropathy",
            "nerve damage",
            "sciatica",
            "tingling",
        ],
        "summary": (
            "Damage to nerves outside the brain and spinal cord, often causing burning pain, "
            "tingling or numbness. Several state programs list neuropathy or nerve pain."
        ),
        "body": (
            "## About neuropathy\n"
            "\n"
            "Peripheral neuropathy is damage to the nerves that connect the brain and spinal cord "
            "to the rest of the body. Diabetes is the most common cause, but it can also follow "
            "chemotherapy, infections, injuries, heavy alcohol use or vitamin shortages. Symptoms "
            "often start in the feet or hands and include burning, stabbing or electric pain, "
            "tingling, numbness and sensitivity to touch.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Nerve pain can be stubborn, so patients often ask whether cannabis might help when "
            "other medicines have not. Nerve-related pain is one of the areas where some patients "
            "and studies report modest benefit, though results vary and side effects such as "
            "dizziness or sleepiness are common. Cannabis does not repair damaged nerves, and "
            "managing the underlying cause, such as blood sugar, remains important.\n"
            "\n"
            "Before your visit, it helps to note:\n"
            "\n"
            "- What is thought to cause your neuropathy\n"
            "- Which pain medicines you have tried\n"
            "- Any numbness in the feet that affects your balance\n"
            "\n"
            "Several states list neuropathy or neuropathic pain directly, while others cover it as "
            "chronic or severe pain.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to confirm your state, find a certified "
            "physician nearby or by telehealth where allowed, and book the visit.\n"
        ),
        "published": True,
    },
    {
        "name": "Alzheimer's disease",
        "slug": "alzheimers-disease",
        "synonyms": [
            "alzheimer's disease",
            "alzheimers disease",
            "alzheimer's",
            "alzheimers",
            "alzheimer disease",
            "dementia",
            "memory loss",
        ],
        "summary": (
            "The most common cause of dementia, gradually affecting memory, thinking and behavior. "
            "Several state programs list Alzheimer's disease."
        ),
        "body": (
            "## About Alzheimer's disease\n"
            "\n"
            "Alzheimer's disease is a progressive brain condition and the most common cause of "
            "dementia. It gradually affects memory, thinking, language and the ability to manage "
            "daily life. As the disease advances, many people also experience agitation, "
            "restlessness, disrupted sleep and poor appetite, which can be very hard on families "
            "and caregivers.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Most questions come from family members and caregivers who want to know whether "
            "cannabis might ease agitation, sleep problems or appetite loss. Some small studies "
            "and caregiver reports describe improvement in these behavioral symptoms, but the "
            "evidence is limited, and there is no evidence that cannabis slows memory loss or the "
            "disease itself. Older adults can be more sensitive to side effects such as confusion, "
            "dizziness and falls, so careful dosing and supervision matter.\n"
            "\n"
            "A certified physician can discuss how cannabis would fit with current medicines and "
            "care plans, and who will store and give doses. In most states a caregiver can "
            "register to buy and give products on the patient's behalf.\n"
            "\n"
            "Several state programs list Alzheimer's disease, sometimes specifically for "
            "agitation.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call the patient or caregiver, confirm the state, "
            "find a certified physician nearby or by telehealth where permitted, and book the "
            "visit. The physician may ask who makes medical decisions for the patient.\n"
        ),
        "published": True,
    },
    {
        "name": "Autism",
        "slug": "autism",
        "synonyms": [
            "autism",
            "autism spectrum disorder",
            "asd",
            "autistic",
            "asperger's",
            "aspergers",
        ],
        "summary": (
            "A developmental condition that affects communication, social interaction and "
            "behavior. A number of state programs list autism, often for people with severe "
            "symptoms."
        ),
        "body": (
            "## About autism\n"
            "\n"
            "Autism spectrum disorder is a developmental condition that affects how people "
            "communicate, interact with others and experience the world. It varies widely: some "
            "autistic people live independently, while others need daily support. Some also have "
            "challenges such as anxiety, sleep problems, seizures, irritability or self-injury, "
            "and these are often what families ask about.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Questions usually come from parents and caregivers, and sometimes from autistic "
            "adults. Some families and small studies report improvements in irritability, sleep or "
            "behavior with CBD-rich products, but the research is early, studies have been small, "
            "and effects on a developing brain are not well understood. Side effects such as "
            "sleepiness, appetite changes and interactions with other medicines are possible.\n"
            "\n"
            "Because many autism patients are children or teenagers, state rules usually require a "
            "parent or guardian to be registered as a caregiver, and some states require extra "
            "medical sign-off for minors. A certified physician will want to hear about current "
            "therapies and medicines and the specific concerns you hope to address.\n"
            "\n"
            "A number of states list autism, sometimes only when symptoms are severe or include "
            "self-injury or aggression.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call the patient or family, confirm your state's "
            "rules for minors or adults, find a certified physician nearby or by telehealth where "
            "allowed, and book the visit.\n"
        ),
        "published": True,
    },
    {
        "name": "Huntington's disease",
        "slug": "huntingtons-disease",
        "synonyms": [
            "huntington's disease",
            "huntingtons disease",
            "huntington's",
            "huntingtons",
            "huntington disease",
            "huntington's chorea",
            "chorea",
        ],
        "summary": (
            "An inherited condition that gradually damages brain cells, affecting movement, "
            "thinking and mood. Several state programs list Huntington's disease."
        ),
        "body": (
            "## About Huntington's disease\n"
            "\n"
            "Huntington's disease is an inherited condition in which nerve cells in parts of the "
            "brain break down over time. It usually appears in adulthood and causes uncontrolled "
            "jerking or writhing movements (chorea), along with changes in thinking, mood and "
            "behavior. The disease progresses over many years, and care focuses on managing "
            "symptoms and supporting the person and family.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Patients and families often ask whether cannabis might ease involuntary movements, "
            "irritability, anxiety, sleep problems or weight loss. Some patients report benefit, "
            "but the few controlled studies have not shown clear improvement in movements, and "
            "more research is needed. Because Huntington's can affect mood and thinking, it is "
            "important to watch for side effects such as confusion, low mood or unsteadiness.\n"
            "\n"
            "A certified physician can review your current medicines, how symptoms affect daily "
            "life and who helps with care. Keep your neurologist and care team involved in any "
            "decisions.\n"
            "\n"
            "Several state programs list Huntington's disease, and in others it may fall under "
            "broader neurological categories or the physician's judgment.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call the patient or caregiver, confirm your state, "
            "find a certified physician nearby or by telehealth where permitted, and book a visit "
            "at a convenient time.\n"
        ),
        "published": True,
    },
    {
        "name": "Tourette syndrome",
        "slug": "tourettes-syndrome",
        "synonyms": [
            "tourette syndrome",
            "tourette's syndrome",
            "tourettes syndrome",
            "tourette's",
            "tourettes",
            "tics",
            "tic disorder",
        ],
        "summary": (
            "A neurological condition that causes repeated, involuntary movements and sounds "
            "called tics. Some state programs list Tourette syndrome."
        ),
        "body": (
            "## About Tourette syndrome\n"
            "\n"
            "Tourette syndrome is a neurological condition that causes tics: sudden, repeated "
            "movements or sounds that are hard to control, such as blinking, shrugging, throat "
            "clearing or saying words. Tics usually begin in childhood, often ease in adulthood, "
            "and commonly occur alongside ADHD, obsessive-compulsive symptoms or anxiety. "
            "Behavioral therapy and medicines can help when tics are bothersome.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Adults with tics, and parents of younger patients, sometimes ask whether cannabis "
            "could reduce tics or the urge that comes before them. Some patients and small studies "
            "report fewer or milder tics, but the research is limited and results vary. Effects on "
            "attention, mood and school or work performance are worth discussing, especially for "
            "teenagers and young adults.\n"
            "\n"
            "Things to bring to a certified physician:\n"
            "\n"
            "- A description of your tics and what makes them better or worse\n"
            "- Current medicines and therapies\n"
            "- Any other conditions, such as ADHD or anxiety\n"
            "\n"
            "Some states list Tourette syndrome directly, and patients under 18 generally need a "
            "parent or guardian registered as a caregiver.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to confirm your state's rules, find a "
            "certified physician nearby or by telehealth where allowed, and schedule the visit.\n"
        ),
        "published": True,
    },
    {
        "name": "Terminal illness",
        "slug": "terminal-illness",
        "synonyms": [
            "terminal illness",
            "terminal",
            "terminally ill",
            "hospice",
            "end of life",
            "end-of-life",
            "palliative care",
        ],
        "summary": (
            "An illness that cannot be cured and is expected to lead to death, often within "
            "months. Many state programs list terminal illness or hospice care."
        ),
        "body": (
            "## About terminal illness\n"
            "\n"
            "A terminal illness is a disease that cannot be cured and is expected to end a "
            "person's life, often within a set period such as six or twelve months. At this stage, "
            "care usually shifts toward comfort, dignity and quality of life, often with the "
            "support of a hospice or palliative care team. Common concerns include pain, nausea, "
            "appetite loss, anxiety, trouble sleeping and breathlessness.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Patients and families often ask whether cannabis might help with comfort symptoms "
            "such as pain, nausea, appetite or sleep. Some patients and studies report relief from "
            "these symptoms, and many palliative care teams are used to questions about cannabis. "
            "It can also cause drowsiness or confusion, which some people want to avoid so they "
            "can stay alert with family.\n"
            "\n"
            "If hospice is involved, let the hospice team know, since some have their own policies "
            "on cannabis and can help coordinate medicines. A certified physician can talk through "
            "goals, product forms that are easy to take, and how a caregiver can help.\n"
            "\n"
            "Many state programs list terminal illness, and some offer faster or simpler steps for "
            "these patients.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call the patient or family, confirm your state, "
            "find a certified physician nearby or one who offers telehealth where permitted, which "
            "is often easiest at this stage, and book the visit as soon as possible.\n"
        ),
        "published": True,
    },
    {
        "name": "Sickle cell disease",
        "slug": "sickle-cell-disease",
        "synonyms": [
            "sickle cell disease",
            "sickle cell",
            "sickle cell anemia",
            "sickle-cell",
            "scd",
            "sickle cell crisis",
            "pain crisis",
        ],
        "summary": (
            "An inherited blood disorder that can cause sudden pain crises and long-term "
            "complications. Several state programs list sickle cell disease."
        ),
        "body": (
            "## About sickle cell disease\n"
            "\n"
            "Sickle cell disease is an inherited blood disorder in which red blood cells take on a "
            "stiff, crescent shape. These cells can block blood flow, causing sudden episodes of "
            "severe pain known as pain crises, along with fatigue, infections and organ damage "
            "over time. Many people also live with ongoing daily pain between crises. Care may "
            "include medicines, transfusions, pain management and, for some, a stem cell "
            "transplant.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Patients commonly ask whether cannabis might help with daily pain, crisis pain or "
            "sleep, or reduce how much other pain medicine they need. Some patients and surveys "
            "report relief, though a small controlled study did not find a clear drop in pain "
            "scores, and more research is needed.\n"
            "\n"
            "A certified physician can help you weigh:\n"
            "\n"
            "- How cannabis might fit with your hematologist's plan\n"
            "- Whether inhaled products are a concern, given lung complications such as acute "
            "chest syndrome\n"
            "- Interactions with opioids or other pain medicines\n"
            "\n"
            "Several state programs list sickle cell disease, and others may consider it under "
            "chronic or severe pain.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to confirm your state, find a certified "
            "physician nearby or by telehealth where allowed, and book your visit.\n"
        ),
        "published": True,
    },
    {
        "name": "Ulcerative colitis",
        "slug": "ulcerative-colitis",
        "synonyms": [
            "ulcerative colitis",
            "colitis",
            "uc",
            "ulcerative proctitis",
            "proctitis",
        ],
        "summary": (
            "A long-term inflammatory bowel disease that causes inflammation and sores in the "
            "lining of the colon. Several state programs list ulcerative colitis."
        ),
        "body": (
            "## About ulcerative colitis\n"
            "\n"
            "Ulcerative colitis is a form of inflammatory bowel disease in which the lining of the "
            "large intestine (colon) and rectum becomes inflamed and develops sores. Symptoms "
            "include diarrhea, often with blood, urgent trips to the bathroom, belly cramps, "
            "tiredness and weight loss. Like Crohn's disease, it tends to come and go in flares "
            "and is usually treated with medicines that calm inflammation, and sometimes with "
            "surgery.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Patients often ask whether cannabis might help with cramping, pain, appetite or the "
            "stress of living with a chronic gut condition. Some patients and small studies report "
            "feeling better, but studies so far have not shown that cannabis heals the colon "
            "lining or can replace proven medicines. Feeling better on the surface can also hide "
            "signs that a flare is getting worse.\n"
            "\n"
            "Talk with a certified physician and your gastroenterologist before adding cannabis, "
            "and do not stop prescribed treatment during a flare. Mention any liver, heart or "
            "mental health concerns, since these can affect the choice of product.\n"
            "\n"
            "Several state programs list ulcerative colitis, sometimes grouped under inflammatory "
            "bowel disease.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to confirm your state, find a certified "
            "physician nearby or by telehealth where allowed, and schedule the visit.\n"
        ),
        "published": True,
    },
    {
        "name": "Opioid use disorder",
        "slug": "opioid-use-disorder",
        "synonyms": [
            "opioid use disorder",
            "oud",
            "opioid addiction",
            "opiate addiction",
            "opioid dependence",
            "opiate withdrawal",
            "opioid withdrawal",
        ],
        "summary": (
            "A treatable condition involving problematic opioid use. A few states list it, "
            "generally only alongside standard treatment such as medication for opioid use "
            "disorder."
        ),
        "body": (
            "## About opioid use disorder\n"
            "\n"
            "Opioid use disorder is a medical condition in which a person has trouble controlling "
            "their use of opioids, such as prescription painkillers, heroin or fentanyl, despite "
            "harm to their health, work or relationships. It is treatable. Medicines such as "
            "buprenorphine, methadone and naltrexone, combined with counseling and support, are "
            "the best-studied approaches and lower the risk of overdose and death.\n"
            "\n"
            "## What patients ask about medical cannabis\n"
            "\n"
            "Some people ask whether cannabis could help with withdrawal symptoms, cravings, pain "
            "or sleep during recovery. Some patients and studies report that cannabis eased these "
            "symptoms for them, but the research is mixed, and cannabis is not a replacement for "
            "proven treatment. Cannabis use can also become a problem of its own for some people.\n"
            "\n"
            "If you are in treatment, keep taking your prescribed medicine and talk with your "
            "treatment provider before adding anything new. A certified physician can discuss "
            "whether cannabis is appropriate as an addition to that care.\n"
            "\n"
            "Only a few states list opioid use disorder, and they usually require the patient to "
            "be enrolled in standard treatment. If you or someone you know is at risk of overdose, "
            "keep naloxone on hand and call 911 in an emergency.\n"
            "\n"
            "## After you request an appointment\n"
            "\n"
            "A patient support specialist will call to confirm your state, find a certified "
            "physician nearby or by telehealth where allowed, and book the visit.\n"
        ),
        "published": True,
    },
]
